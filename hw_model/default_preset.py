"""The preset a machine gets when none is named, in a module of its own: the command line's
top-level help names it without building the pydantic GPU specs (hw_model.config)."""

DEFAULT_PRESET = "gfx900"
