"""An execution's report: one offline HTML page (``render.write_report``) from what the local home recorded."""
