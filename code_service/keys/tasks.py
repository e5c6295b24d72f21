"""Key rotation runs from the CLI (`tzt keys rotate`) or a scheduled job calling KeyService.rotate."""
