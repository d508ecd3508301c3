"""The Yambda layout (:mod:`.layout`), its Spark reader (:mod:`.reader`) and its Arrow writer (:mod:`.writer`)."""
