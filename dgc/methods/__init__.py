"""The named methods (`registry`) and the two families they belong to (`family`)."""
