-- Hold jobs until they are due (run_after, delay, retry backoff). A keyed job of a topic
-- that takes turns between keys is marked with its key (keyof: id -> "<key>"), so
-- promote.lua puts it behind its key's job when it is due (see flow_pop.lua).
-- KEYS[1] scheduled  sorted set: job id -> due time (ms)
-- KEYS[2] schedprio  hash: job id -> priority, used when the job is promoted
-- KEYS[3] entities   hash: entity id -> job id
-- KEYS[4] leases     sorted set: a scheduled retry is no longer leased
-- KEYS[5] metrics    hash: the topic's counters and histogram buckets
-- KEYS[6] keyof      hash: job id -> "<key>\t<score in hex>" for a queued keyed job, "<key>" for a scheduled one
-- KEYS[7] keyfull    flag: a pop passed over jobs whose key was full (see flow_pop.lua)
-- KEYS[8] wake       list that idle workers block on: a retry's freed place wakes one
-- ARGV[1] a tally for the topic's metrics hash: "field=integer" pairs, space-separated, or ""
-- ARGV[2..] quintuples: job id, due time in ms, priority, entity id or "", job key or ""
-- Returns the number of jobs scheduled.
local released = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  redis.call('ZADD', KEYS[1], tonumber(ARGV[i + 1]), id)
  redis.call('HSET', KEYS[2], id, ARGV[i + 2])
  released = released + redis.call('ZREM', KEYS[4], id)
  if ARGV[i + 3] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[i + 3], id)
  end
  if ARGV[i + 4] ~= '' then
    redis.call('HSET', KEYS[6], id, ARGV[i + 4])
  end
end
for field, amount in string.gmatch(ARGV[1], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[5], field, amount)
end
if released > 0 and redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('RPUSH', KEYS[8], '1')
  redis.call('LTRIM', KEYS[8], 0, 63)
end
return (#ARGV - 1) / 5
