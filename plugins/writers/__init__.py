"""The built-in writers (console, tensorboard, gauges, jsonl) and the demo's flaky one: plugins like any other,
found through their entry points.  They import only the contract (``statbus.plugins``)."""
