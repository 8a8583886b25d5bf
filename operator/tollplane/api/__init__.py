"""The custom resources and the Policy contract: the single source of truth of Tollplane."""
