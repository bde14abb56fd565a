"""Dashboard widgets: live tables repainted in place from the state model, plots, panels."""
