"""The protocol: sans-IO, deterministic, no clock, socket, disk or thread.

Messages and their canonical codec (`messages`), the genesis schema (`genesis`), the agreed state
and its round transition (`state`), the reputation ledger (`ledger`), one Tendermint instance per
FL round (`consensus`), the member's whole protocol as a state machine (`core`) and the
Byzantine effect filters that test networks plug into a driver (`behaviour`). A test imports this
package in a fresh interpreter and fails if trio, socket, sqlite3 or time got loaded.
"""
