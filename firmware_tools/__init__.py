"""Getting agents onto devices and keeping them current."""
