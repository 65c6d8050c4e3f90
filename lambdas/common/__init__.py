"""What the three stages share: the table contracts, connections, the lake layout and errors."""
