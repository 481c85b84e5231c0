"""The differential test of the trigger renderer: random badge sets and writes, badged against a naive oracle.

``schema`` is the tables and the values writes draw from; ``conditions`` generates badges of the three
condition shapes; ``writes`` generates statements; ``oracle`` installs one plain trigger per badge (no
code shared with ``badged.render``); ``case`` is one generated case, printable as badge.json + SQL.
"""
