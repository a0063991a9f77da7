"""Video analysis: shots, face tracks, identities across shots, harvested references, the analysis file.

Entry points (imported from their modules, so importing this package stays light):

- ``iconface_video.analysis.analyze.analyze_video(input, output, AnalyzeSettings(), progress)``
- ``iconface_video.analysis.schema.load_analysis(path) -> Analysis`` / ``save_analysis(analysis, path)``
"""
