"""Every `t3d bench ...`: benchmark runs on one harness (finished rows read back, worker processes, reports)."""
