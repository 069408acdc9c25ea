"""The query front door (image, text or embedding -> cells). Filled by the query-layer issue."""
