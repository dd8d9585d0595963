"""A sample app to deliver progressively: `python -m rheostat.demo.app --port P --version V`."""
