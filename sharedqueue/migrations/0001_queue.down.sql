DROP TABLE queue_replicas;
DROP TABLE build_queue;
