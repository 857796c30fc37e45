-- Runs once, when the postgres volume is first initialised (as the POSTGRES_USER superuser).
-- The event store lives in `continuo` (POSTGRES_DB); governance keeps its read models in a
-- database of its own and migrates it itself at start-up.
CREATE DATABASE governance OWNER continuo;
