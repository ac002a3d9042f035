"""Pure tensor operations (torch only, no model knowledge) used by the token-compression methods."""
