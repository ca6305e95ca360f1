"""The Trio node: the protocol core driven by real sockets, a real clock and a real disk.

The encrypted channel (`channel`), the member transport over TCP (`transport`), the durable store
(`store`), the driver that owns a core and executes its effects (`driver`), and what a member
trains each round (`workload`).
"""
