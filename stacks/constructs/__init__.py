"""One CDK construct per concern; the stacks in ``stacks.shared`` and ``stacks.plant`` compose them."""
