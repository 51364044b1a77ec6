-- Which node holds an in-flight delivery's lease (for operators: "who is
-- running this?"); cleared with the lease.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
