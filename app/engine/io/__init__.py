"""Reading crystal files of every format and writing candidates out."""
