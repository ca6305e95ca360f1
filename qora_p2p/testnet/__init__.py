"""Test networks: scenarios, local clusters of real node processes, reports and node profiles.

Nothing here runs in a production node; a test network plugs its faults and attacks into the
hooks the node offers, or (``netns``) runs unmodified nodes in network namespaces and makes its
faults on their packets.
"""
