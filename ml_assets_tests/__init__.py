"""Tests of ml_assets; real TLC months come from ../shared/data/nyc-tlc."""
