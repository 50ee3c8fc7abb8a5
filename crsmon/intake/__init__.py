"""The intake edge: strict feed records in, validated rows out."""
