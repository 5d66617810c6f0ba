"""Studies: a YAML grid of runs x evaluations executed cell by cell into tables and figures
(``selfsup study studies/NAME.yaml --scale quick --out DIR``)."""
