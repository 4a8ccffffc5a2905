"""Plain functions shared by test modules in more than one folder (fixtures live in the
conftest.py files; helpers of one folder, in that folder)."""
