"""Registration over HTTP, leases, and the table shared through Redis.

``api`` (the leader's registration API), ``schemas`` (what a registration body must
hold), ``leases`` (leases kept in Redis and every worker's table kept in step),
``redis_store`` (the Redis side), ``remotes`` (the one way an instance's URL becomes
routes, the lease limits), ``registrar`` (a remote client keeping itself registered
with its leaders).
"""
