"""Reports of a recorded run: the text report, the emissions statement and the plots."""
