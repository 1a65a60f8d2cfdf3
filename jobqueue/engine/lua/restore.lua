-- include: keyed
-- Put back jobs the database holds as queued (or scheduled) whose push never reached Redis.
-- An id Redis already holds in the queue or the leases (or, for a scheduled job, the
-- schedule; for a keyed job, behind its key's job) is left alone, so a job taken by a
-- worker meanwhile is never queued twice. A keyed job of a topic that takes turns between
-- keys goes back behind its key's job, as push_flow.lua pushes it (see flow_pop.lua), so
-- its key's limit and turns hold; a scheduled one gets its key's mark for promote.lua.
-- KEYS[1]  queue      sorted set: job id -> score (see push.lua)
-- KEYS[2]  seq        counter giving each push its place within a priority
-- KEYS[3]  entities   hash: entity id -> job id (set only where no mapping exists)
-- KEYS[4]  leases     sorted set: job id -> lease deadline (ms)
-- KEYS[5]  scheduled  sorted set: job id -> due time (ms)
-- KEYS[6]  schedprio  hash: scheduled job id -> priority
-- KEYS[7]  wake       list that idle workers block on (BLPOP)
-- KEYS[8]  keyheads   hash: job key -> the id of its job in the queue
-- KEYS[9]  keyof      hash: job id -> "<key>\t<score in hex>" for a queued keyed job, "<key>" for a scheduled one
-- KEYS[10] keyqueue   sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV    quintuples: job id, priority (-100..100), entity id or "", due time in ms or "" for a queued job,
--         job key or "" (a key only for a topic that takes turns)
-- Returns the ids put back.
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local restored = {}
local queued = 0
for i = 1, #ARGV, 5 do
  local id, priority, entity, due, key = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local held = redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[4], id)
  if not held and due ~= '' then
    held = redis.call('ZSCORE', KEYS[5], id)
  end
  local tag = redis.call('HGET', KEYS[9], id)
  if not held and due == '' and tag and string.find(tag, '\t', 1, true) then
    held = redis.call('ZSCORE', KEYS[10], string.format('%s%s', tag, id))
  end
  if not held then
    if due ~= '' then
      redis.call('ZADD', KEYS[5], tonumber(due), id)
      redis.call('HSET', KEYS[6], id, priority)
      if key ~= '' then
        redis.call('HSET', KEYS[9], id, key)
      end
    else
      redis.call('ZREM', KEYS[5], id)
      redis.call('HDEL', KEYS[6], id)
      if key == '' then
        redis.call('ZADD', KEYS[1], (100 - priority) * SHIFT + redis.call('INCR', KEYS[2]), id)
      else
        keyed_push(KEYS[1], KEYS[2], KEYS[8], KEYS[9], KEYS[10], key, id, priority)
      end
      queued = queued + 1
    end
    if entity ~= '' then
      redis.call('HSETNX', KEYS[3], entity, id)
    end
    restored[#restored + 1] = id
  end
end
if queued > 0 then
  local tokens = {}
  for i = 1, math.min(queued, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[7], unpack(tokens))
  redis.call('LTRIM', KEYS[7], 0, 63)
end
return restored
