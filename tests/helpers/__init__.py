"""Builders the tests share: tiny models, harvest configs, gateways, a real browser."""
