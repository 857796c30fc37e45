"""Governance's HTTP routes: thin translations between HTTP and the governance core."""
