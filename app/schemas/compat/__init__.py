"""Request and response shapes of the two existing frontends, exactly as their source reads them."""
