"""What a user runs, each composed of a run session, a model, an objective and views: text to 3D (`generate`,
single- or multi-stage), capture fitting (`fit`), text edits of captured scenes (`edit`), and what any run
directory supports afterwards (`results`: load, export, evaluate)."""
