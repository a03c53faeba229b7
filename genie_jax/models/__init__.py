"""The three networks of Genie, built from one ST-transformer block type."""
