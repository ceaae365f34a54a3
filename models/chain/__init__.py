"""The `chain` model: RMAD applied to per-address feature vectors, trained on the Ethereum fraud accounts file."""
