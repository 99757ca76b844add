"""Drawing helpers (DAM areas over images / feature maps)."""
