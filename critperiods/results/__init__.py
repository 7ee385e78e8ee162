"""From per-piece results to answers: runs assembled into the cube, the critical-period
statistics, figures and the report's first page."""
