DROP TABLE summary_versions;
