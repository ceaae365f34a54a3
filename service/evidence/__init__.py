"""Alert evidence: what the data looked like around an alert, captured when it is raised and kept with it."""
