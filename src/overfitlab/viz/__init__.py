"""Pictures and pages: figures of runs and studies, the HTML templates, the small HTML pieces
results render themselves with. Nothing here knows a result type; nothing is re-exported, so
importing one piece (the HTML helpers) does not import matplotlib."""
