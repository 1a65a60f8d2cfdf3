"""The demo app: a text pipeline whose progress a visitor watches live."""
