"""Ready-made studies that need more than one Hydra multirun (runs that feed other runs).

- `python -m trainlab.studies.yosinski`: Yosinski et al. (2014), transfer A -> B by depth.
"""
