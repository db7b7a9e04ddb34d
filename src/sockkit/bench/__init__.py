"""``sockkit bench models``: every server model and the reference peers under the same load.

``targets``    what can be measured: the sockkit models and the bare reference servers (peers)
``scenarios``  the loads: short transactions, slow requests, idle connections, churn
``measure``    one measurement: start a server, hold idle connections, drive it, sample it, stop it
``summary``    medians, ratios against the peers, the issue's targets, Markdown and PNG charts
"""
