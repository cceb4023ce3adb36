"""What analysts use: queries over the findings in Elasticsearch."""
