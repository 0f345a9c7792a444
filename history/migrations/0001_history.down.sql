DROP TABLE requests;
DROP TABLE events;
DROP TABLE builds;
