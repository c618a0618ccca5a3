"""The validate_data step."""
