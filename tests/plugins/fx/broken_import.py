"""A module that fails at import."""
raise RuntimeError("this plugin module is broken at import")
