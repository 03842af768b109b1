"""One folder per model family: `configuration_<family>.py` + `modeling_<family>.py`."""
