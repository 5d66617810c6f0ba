"""Analysis of runs: plots (confusion matrices), and later embedding maps, retrieval grids and
reports. Modules import matplotlib lazily, so importing this package stays cheap."""
