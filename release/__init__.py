"""Acting on finished runs: evaluate them, compare them, reproduce them, promote one to production."""
