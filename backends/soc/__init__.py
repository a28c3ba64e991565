"""Systems on a chip whose one interface meters several components: Jetson boards, Apple Silicon.

They live apart from ``gpu``/``cpu``/``memory`` because a single source (a board's INA3221
rails, Apple's energy model) yields the GPU, CPU and DRAM figures together, and some of its
figures cover more than one component, which only that source can say.
"""
