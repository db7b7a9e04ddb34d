"""The reliability suite: hostile clients, faults and signals against every server model."""
