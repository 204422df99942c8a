"""`toothseg review`: a local web page to check, correct and accept predicted masks into a new labelled dataset."""
